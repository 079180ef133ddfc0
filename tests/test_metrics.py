"""tinycl.cl.metrics against hand-worked matrices."""

import json
import math
import time

import numpy as np
import pytest

from tinycl.cl.metrics import AccuracyMatrix, ExperienceLog, average_accuracy, bwt, forgetting
from tinycl.errors import TinyclError

nan = float("nan")
R1 = [[0.9, nan, nan],
      [0.6, 0.8, nan],
      [0.5, 0.7, 0.95]]
# the best accuracy on experience 0 is reached after experience 1, not on the diagonal
R2 = [[0.5, nan, nan],
      [0.7, 0.6, nan],
      [0.4, 0.9, 0.8]]


def test_average_accuracy_hand_worked():
    assert average_accuracy(R1) == pytest.approx([0.9, (0.6 + 0.8) / 2, (0.5 + 0.7 + 0.95) / 3])
    assert average_accuracy(R2)[-1] == pytest.approx(0.7)


def test_forgetting_is_max_earlier_minus_final():
    per, mean = forgetting(R1)
    assert per == pytest.approx([0.9 - 0.5, 0.8 - 0.7])
    assert mean == pytest.approx(0.25)
    per, mean = forgetting(R2)
    # j=0: max(0.5, 0.7) - 0.4 = 0.3 (Avalanche's R[0][0]-based rule would give 0.1)
    # j=1: 0.6 - 0.9 = -0.3 (improved)
    assert per == pytest.approx([0.3, -0.3])
    assert mean == pytest.approx(0.0)


def test_bwt_hand_worked():
    assert bwt(R1) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert bwt(R2) == pytest.approx(((0.4 - 0.5) + (0.9 - 0.6)) / 2)


def test_single_experience_and_bad_shapes():
    assert math.isnan(bwt([[0.7]])) and math.isnan(forgetting([[0.7]])[1])
    assert average_accuracy([[0.7]]).tolist() == [0.7]
    with pytest.raises(TinyclError, match="square"):
        bwt([[0.1, 0.2]])
    with pytest.raises(TinyclError, match="square"):
        forgetting(np.zeros(3))


def test_accuracy_matrix_counts_and_seen_accuracy():
    m = AccuracyMatrix(3)
    m.record(0, 0, 9, 10)
    m.record(1, 0, 6, 10)
    m.record(1, 1, 16, 20)
    m.record(2, 0, 5, 10)
    m.record(2, 1, 14, 20)
    m.record(2, 2, 0, 0)  # an experience with an empty test set (it introduced no class)
    r = m.matrix
    assert r[0, 0] == 0.9 and r[1, 1] == 0.8 and math.isnan(r[2, 2]) and math.isnan(r[0, 1])
    # pooled: (6 + 16) / 30 after experience 1; (5 + 14) / 30 after experience 2
    assert m.seen_accuracy() == pytest.approx([0.9, 22 / 30, 19 / 30])
    assert average_accuracy(r) == pytest.approx([0.9, 0.7, 0.6])
    s = m.summary()
    json.dumps(s)  # plain numbers, NaN turned into None
    assert s["accuracy_matrix"][0][1] is None
    assert s["final_seen_class_accuracy"] == pytest.approx(19 / 30)
    assert s["forgetting_per_experience"] == pytest.approx([0.4, 0.1])
    assert s["bwt"] == pytest.approx(-0.25)
    with pytest.raises(TinyclError, match="out of range"):
        m.record(3, 0, 1, 1)
    with pytest.raises(TinyclError, match="correct <= total"):
        m.record(0, 0, 5, 4)
    with pytest.raises(TinyclError):
        AccuracyMatrix(0)


def test_experience_log_times_and_costs():
    log = ExperienceLog()
    with log.time(0) as rec:
        time.sleep(0.05)
        rec.train_macs = 1_000
        rec.replay_bytes = 64
    log.add(1, 0.5, train_macs=2_000, replay_bytes=128)
    assert 0.05 <= log.records[0].seconds < 2.0
    assert log.total_macs == 3_000
    assert log.total_seconds == pytest.approx(log.records[0].seconds + 0.5)
    assert log.to_list()[1] == {"experience": 1, "seconds": 0.5, "train_macs": 2000, "replay_bytes": 128}
