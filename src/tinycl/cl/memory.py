"""Replay memory of quantized, densely packed latents (or raw 8-bit inputs) with labels.

Storage (what :meth:`ReplayMemory.nbytes` counts, in bytes):

- payload: one byte-aligned row per stored sample, ``ceil(D * bits / 8)`` bytes for a
  sample of ``D`` values at ``bits`` bits (D * 2 for fp16, D * 4 for fp32); codes are
  packed densely inside the row (:func:`tinycl.numerics.packing.pack_rows`). Per-row
  alignment keeps random replacement a single row write; it costs nothing when
  ``D * bits`` is a multiple of 8 (e.g. any D divisible by 8).
- labels: int16, 2 bytes per stored sample (labels must be in 0..32767).
- experiences: int16 experience id, 2 bytes per stored sample.
- metadata: the quantizer's scales and zero points (fp32; 8 bytes per group).

A sample's row, label and experience id always live in the same slot and are
written together, so a latent never loses its label.

Policies (``capacity`` = M; all random choices come from the memory's own generator,
seeded with ``seed`` and saved in :meth:`state_dict`):

- ``"ar1"`` (AR1* latent replay, as in Avalanche): experience ``i`` (0-based, passed to
  :meth:`add`) gets ``q_i = M // (i + 1)`` slots. The samples kept from experience
  ``i`` are a uniform random subset of ``min(q_i, n_i)`` of its ``n_i`` samples
  (reservoir sampling inside the experience, so an experience may arrive in several
  :meth:`add` calls). Each kept sample takes a free slot if there is one, otherwise it
  replaces a uniformly chosen entry of an earlier experience. Experience 0 thus takes
  ``min(M, n_0)`` samples and, once full, the memory stays at ``M`` entries.
  (Avalanche replaces ``q_i`` random entries of the memory; it never fills free slots
  left when ``n_0 < M``. Experience ids must not decrease.)
- ``"reservoir"``: Algorithm R over the stream of all samples: sample ``t`` (0-based
  over all calls) is stored while the memory is not full, else it replaces slot ``j``
  with ``j`` uniform in ``0..t`` when ``j < M``.
- ``"class_balanced"``: while not full, store. When full, a sample of class ``y`` with
  fewer entries than the largest class evicts a random entry of a largest class (ties
  between largest classes broken uniformly). If ``y`` is itself a largest class, it
  replaces a random entry of ``y`` with probability ``count_y / seen_y`` (reservoir
  inside the class), so each class keeps a uniform subset of its own stream. Class
  counts end within one of each other (for classes with enough samples).
"""

from __future__ import annotations

import math
import operator

import torch

from tinycl.errors import TinyclError
from tinycl.numerics.latent_quant import LatentQuantizer
from tinycl.numerics.packing import pack_rows, row_nbytes, unpack_rows

POLICIES = ("ar1", "reservoir", "class_balanced")
ID_MAX = 32767  # labels and experience ids are stored as int16
STATE_FORMAT = "tinycl.replay_memory/1"


class ReplayMemory:
    """Fixed-capacity replay buffer; see the module docstring for storage and policies."""

    def __init__(self, capacity: int, quantizer: LatentQuantizer, policy: str = "ar1", seed: int = 0):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise TinyclError(f"replay memory: capacity must be a positive integer, got {capacity!r}")
        if policy not in POLICIES:
            raise TinyclError(f"replay memory: policy must be one of {POLICIES}, got {policy!r}")
        if not isinstance(quantizer, LatentQuantizer):
            raise TinyclError(f"replay memory: quantizer must be a LatentQuantizer, got {type(quantizer).__name__}")
        self.capacity = capacity
        self.quantizer = quantizer
        self.policy = policy
        self.seed = int(seed)
        self._rng = torch.Generator().manual_seed(self.seed)
        self.sample_shape: tuple[int, ...] | None = None
        self._rows = self._labels = self._exps = None
        self._size = 0
        self._seen = 0          # samples offered so far (all calls)
        self._cur_exp = -1      # AR1: current experience id
        self._cur_seen = 0      # AR1: samples offered in the current experience
        self._class_seen: dict[int, int] = {}

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return self._size

    @property
    def row_bytes(self) -> int:
        """Payload bytes of one stored sample."""
        if self.sample_shape is None:
            raise TinyclError("replay memory: empty, the sample shape is not known yet")
        d = math.prod(self.sample_shape)
        q = self.quantizer
        return d * (q.storage_bits // 8) if q.is_float else row_nbytes(d, q.bits)

    def nbytes(self, allocated: bool = False) -> dict[str, int]:
        """Exact bytes held: payload, labels (int16), experiences (int16), metadata, total.

        Counts the stored entries, or all ``capacity`` slots with ``allocated=True``.
        """
        n = self.capacity if allocated else self._size
        payload = n * self.row_bytes if self.sample_shape is not None else 0
        meta = self.quantizer.metadata_nbytes() if self.quantizer.fitted else 0
        out = {"payload": payload, "labels": 2 * n, "experiences": 2 * n, "metadata": meta}
        out["total"] = sum(out.values())
        return out

    # ------------------------------------------------------------------ adding
    def add(self, latents: torch.Tensor, labels: torch.Tensor, experience: int) -> int:
        """Offer a batch (N x ...) with its labels (N,) from ``experience``; returns how many were stored."""
        latents, labels, experience = self._check_batch(latents, labels, experience)
        n = latents.shape[0]
        if n == 0:
            return 0
        if self._rows is None:
            self._allocate(tuple(latents.shape[1:]))
        if self.policy == "ar1":
            dest = self._dest_ar1(n, experience)
        elif self.policy == "reservoir":
            dest = self._dest_reservoir(n)
        else:
            dest = self._dest_class_balanced(labels.tolist())
        self._seen += n
        # When two samples of the batch land in one slot, the later one wins.
        winner: dict[int, int] = {}
        for i, s in enumerate(dest):
            if s >= 0:
                winner[s] = i
        if not winner:
            return 0
        slots = torch.tensor(list(winner.keys()), dtype=torch.int64)
        take = torch.tensor(list(winner.values()), dtype=torch.int64)
        self._rows[slots] = self._encode_rows(latents[take])
        self._labels[slots] = labels[take].to(torch.int16)
        self._exps[slots] = experience
        return len(winner)

    def _dest_ar1(self, n: int, experience: int) -> list[int]:
        if experience < self._cur_exp:
            raise TinyclError(
                f"replay memory (ar1): experience ids must not decrease, got {experience} after {self._cur_exp}")
        if experience > self._cur_exp:
            self._cur_exp, self._cur_seen = experience, 0
        quota = self.capacity // (experience + 1)
        exps = self._exps[: self._size]
        cur = torch.nonzero(exps == experience).flatten().tolist()
        old = torch.nonzero(exps != experience).flatten().tolist()
        u = torch.rand(n, 2, generator=self._rng, dtype=torch.float64).tolist()
        dest = [-1] * n
        for t in range(n):
            t_abs = self._cur_seen + t
            if len(cur) < quota:
                if self._size < self.capacity:
                    slot = self._size
                    self._size += 1
                else:
                    k = int(u[t][0] * len(old))
                    slot = old[k]
                    old[k] = old[-1]
                    old.pop()
                cur.append(slot)
                dest[t] = slot
            else:
                j = int(u[t][1] * (t_abs + 1))
                if j < quota:
                    dest[t] = cur[j]
        self._cur_seen += n
        return dest

    def _dest_reservoir(self, n: int) -> list[int]:
        u = torch.rand(n, generator=self._rng, dtype=torch.float64).tolist()
        dest = [-1] * n
        for t in range(n):
            if self._size < self.capacity:
                dest[t] = self._size
                self._size += 1
            else:
                j = int(u[t] * (self._seen + t + 1))
                if j < self.capacity:
                    dest[t] = j
        return dest

    def _dest_class_balanced(self, labels: list[int]) -> list[int]:
        n = len(labels)
        slots_of: dict[int, list[int]] = {}
        for s, y in enumerate(self._labels[: self._size].tolist()):
            slots_of.setdefault(y, []).append(s)
        u = torch.rand(n, 2, generator=self._rng, dtype=torch.float64).tolist()
        dest = [-1] * n
        for t, y in enumerate(labels):
            self._class_seen[y] = self._class_seen.get(y, 0) + 1
            mine = slots_of.setdefault(y, [])
            if self._size < self.capacity:
                dest[t] = self._size
                mine.append(self._size)
                self._size += 1
                continue
            largest = max(len(v) for v in slots_of.values())
            if len(mine) < largest:
                big = sorted(c for c, v in slots_of.items() if len(v) == largest)
                victim = slots_of[big[int(u[t][0] * len(big))]]
                k = int(u[t][1] * len(victim))
                slot = victim[k]
                victim[k] = victim[-1]
                victim.pop()
                mine.append(slot)
                dest[t] = slot
            else:
                j = int(u[t][1] * self._class_seen[y])
                if j < len(mine):
                    dest[t] = mine[j]
        return dest

    # ------------------------------------------------------------------ reading
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``min(n, len(self))`` distinct entries drawn uniformly: (float32 latents, int64 labels).

        Uses ``generator`` if given, else the memory's own.
        """
        if self._size == 0:
            raise TinyclError("replay memory: cannot sample from an empty memory")
        k = _as_int(n)
        if k is None or k < 0:
            raise TinyclError(f"replay memory: sample size must be a non-negative integer, got {n!r}")
        return self.rows(self.sample_index(k, generator))

    def sample_index(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The slots :meth:`sample` would read: ``min(n, len(self))`` distinct, uniform (same draws)."""
        if self._size == 0:
            raise TinyclError("replay memory: cannot sample from an empty memory")
        return torch.randperm(self._size, generator=generator or self._rng)[: min(int(n), self._size)]

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The entries in slots ``idx``: (float32 latents, int64 labels)."""
        return self._decode_rows(self._rows[idx]), self._labels[idx].to(torch.int64)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every stored entry in slot order: (float32 latents, int64 labels, int64 experience ids)."""
        if self._size == 0:
            raise TinyclError("replay memory: empty")
        n = self._size
        return (self._decode_rows(self._rows[:n]), self._labels[:n].to(torch.int64),
                self._exps[:n].to(torch.int64))

    # ------------------------------------------------------------------ encoding
    def _allocate(self, shape: tuple[int, ...]) -> None:
        self.sample_shape = shape
        self._rows = torch.zeros(self.capacity, self.row_bytes, dtype=torch.uint8)
        self._labels = torch.zeros(self.capacity, dtype=torch.int16)
        self._exps = torch.zeros(self.capacity, dtype=torch.int16)

    def _encode_rows(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.quantizer.encode(x).reshape(x.shape[0], -1)
        if self.quantizer.is_float:
            return codes.contiguous().view(torch.uint8)
        return pack_rows(codes, self.quantizer.bits)

    def _decode_rows(self, rows: torch.Tensor) -> torch.Tensor:
        q, n = self.quantizer, rows.shape[0]
        if q.is_float:
            dtype = torch.float16 if q.bits == "fp16" else torch.float32
            codes = rows.contiguous().view(dtype)
        else:
            codes = unpack_rows(rows, q.bits, math.prod(self.sample_shape))
        return q.decode(codes.reshape((n,) + self.sample_shape))

    def _check_batch(self, latents, labels, experience):
        if not isinstance(latents, torch.Tensor) or not isinstance(labels, torch.Tensor):
            raise TinyclError("replay memory: add expects tensors (latents N x ..., labels N)")
        if latents.dim() < 1 or labels.dim() != 1 or labels.shape[0] != latents.shape[0]:
            raise TinyclError(f"replay memory: {latents.shape[0] if latents.dim() else 0} latents "
                              f"but labels of shape {tuple(labels.shape)}; need one label per latent")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TinyclError(f"replay memory: labels must be integers, got {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > ID_MAX):
            raise TinyclError(f"replay memory: labels must be in 0..{ID_MAX} (stored as int16)")
        e = _as_int(experience)
        if e is None or not 0 <= e <= ID_MAX:
            raise TinyclError(f"replay memory: experience must be an integer in 0..{ID_MAX}, got {experience!r}")
        experience = e
        if self.sample_shape is not None and tuple(latents.shape[1:]) != self.sample_shape:
            raise TinyclError(f"replay memory: sample shape {tuple(latents.shape[1:])} differs from the "
                              f"stored {self.sample_shape}")
        if not self.quantizer.fitted:
            raise TinyclError("replay memory: the quantizer is not calibrated; call quantizer.fit(data) first")
        return latents, labels, experience

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """Plain ints, strings, lists and tensors (loadable with ``torch.load(weights_only=True)``)."""
        n = self._size
        empty = torch.zeros(0, dtype=torch.int16)
        return {
            "format": STATE_FORMAT, "capacity": self.capacity, "policy": self.policy, "seed": self.seed,
            "sample_shape": None if self.sample_shape is None else list(self.sample_shape),
            "size": n, "seen": self._seen, "cur_exp": self._cur_exp, "cur_seen": self._cur_seen,
            "rows": self._rows[:n].clone() if self._rows is not None else torch.zeros(0, 0, dtype=torch.uint8),
            "labels": self._labels[:n].clone() if self._labels is not None else empty,
            "experiences": self._exps[:n].clone() if self._exps is not None else empty.clone(),
            "class_seen": torch.tensor(sorted(self._class_seen.items()), dtype=torch.int64).reshape(-1, 2),
            "rng_state": self._rng.get_state(),
            "quantizer": self.quantizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved memory (its capacity, policy and quantizer replace this one's)."""
        try:
            if state["format"] != STATE_FORMAT:
                raise TinyclError(f"replay memory: unknown state format {state['format']!r}")
            quant = LatentQuantizer("fp32")
            quant.load_state_dict(state["quantizer"])
            mem = ReplayMemory(int(state["capacity"]), quant, state["policy"], int(state["seed"]))
            size = int(state["size"])
            rows, labels, exps = state["rows"], state["labels"], state["experiences"]
            if not 0 <= size <= mem.capacity:
                raise ValueError("size")
            if state["sample_shape"] is not None:
                mem._allocate(tuple(int(d) for d in state["sample_shape"]))
                if tuple(rows.shape) != (size, mem.row_bytes) or rows.dtype != torch.uint8:
                    raise ValueError("rows")
                if tuple(labels.shape) != (size,) or tuple(exps.shape) != (size,):
                    raise ValueError("labels/experiences")
                mem._rows[:size] = rows
                mem._labels[:size] = labels.to(torch.int16)
                mem._exps[:size] = exps.to(torch.int16)
            elif size:
                raise ValueError("sample_shape")
            mem._size = size
            mem._seen, mem._cur_exp, mem._cur_seen = int(state["seen"]), int(state["cur_exp"]), int(state["cur_seen"])
            mem._class_seen = {int(c): int(k) for c, k in state["class_seen"].tolist()}
            mem._rng.set_state(state["rng_state"])
        except TinyclError as e:
            raise TinyclError(f"replay memory: bad state dict ({e})") from None
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise TinyclError(f"replay memory: bad state dict (missing or wrong entry: {e})") from None
        self.__dict__.update(mem.__dict__)

    @classmethod
    def from_state_dict(cls, state: dict) -> "ReplayMemory":
        mem = cls(1, LatentQuantizer("fp32"))
        mem.load_state_dict(state)
        return mem

    def __repr__(self) -> str:
        return (f"ReplayMemory(capacity={self.capacity}, policy={self.policy!r}, size={self._size}, "
                f"quantizer={self.quantizer!r})")


def _as_int(v) -> int | None:
    """``v`` as a Python int (ints, numpy ints, 0-d int tensors), else None."""
    if isinstance(v, bool):
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None
