"""``er_ace``: experience replay with asymmetric cross-entropy (Caccia et al. 2022, ER-ACE).

The replay memory is latent replay's (``n_replays`` slots at ``lr_bits``). In a step with
replays the loss is ``(CE(replayed, all classes) + CE(new, classes present in the new samples)) / 2``
(as Avalanche's ``ACECriterion``): new samples push only against the classes of their own
batch, so they do not drag old-class logits down. The new and the replayed samples go through the
back in two forward passes, as in the reference implementations (Mammoth's ``er_ace``, Avalanche's
``ER_ACE``): each half gets its own batch-norm statistics. From the second experience on, an
experience's samples enter the memory before it trains (Avalanche's ``ER_ACE`` does the same), so
replays include the new classes. Without replays it is plain cross-entropy.
Extra work: none beyond latent replay (a masked softmax). With ``replay: raw`` the memory is
raw replay's (uint8 images in the latent memory's bytes; each replayed image runs the front).
"""

from .. import losses as L
from .base import register
from .latent_replay import LatentReplay


def ace_loss(logits, y, n_new):
    """ER-ACE's loss on a batch whose first ``n_new`` samples are new: value and dL/dlogits."""
    if n_new == len(y) or n_new == 0:
        return L.cross_entropy(logits, y)
    v_new, g_new = L.masked_cross_entropy(logits[:n_new], y[:n_new])
    v_old, g_old = L.cross_entropy(logits[n_new:], y[n_new:])
    g = logits.new_zeros(logits.shape)
    g[:n_new], g[n_new:] = g_new / 2, g_old / 2
    return (v_new + v_old) / 2, g


def ace_step(net, opt, xb, yb, n_new: int) -> float:
    """One ER-ACE step on a batch whose first ``n_new`` samples are new and the rest replayed: the
    new half forward and backward (masked cross-entropy), then the replayed half (cross-entropy),
    gradients summed (each loss halved), one update. Returns the loss."""
    net.train()
    scale = net.scaler.scale if net.scaler is not None else 1.0
    value = 0.0
    for part, loss in ((slice(0, n_new), L.masked_cross_entropy), (slice(n_new, None), L.cross_entropy)):
        v, g = loss(net.forward(xb[part]), yb[part])
        net.backward(g * (scale / 2), need_input=False)   # the two backward passes add their gradients
        value += float(v) / 2
    net.step(opt)
    return value


@register
class ERACE(LatentReplay):
    name = "er_ace"
    replays_per_step = True
    raw_ok = True

    def train(self, x, y) -> None:
        """From the second experience on, the experience's samples enter the memory before it trains
        (as Avalanche's ``ER_ACE``, and as the paper's online buffer that takes samples as they come),
        so replayed batches hold new classes too and their full cross-entropy lifts them against the
        old ones; the first experience trains without replays and is stored after it."""
        if self.run.i > 0:
            self.store(x, y)
        super().train(x, y)

    def after_training(self, x, y) -> None:
        if self.run.i == 0:
            self.store(x, y)

    def step(self, xb, yb, n_new):
        if n_new == len(yb) or n_new == 0:
            return self.logit_step(xb, yb, n_new, ace_loss)
        return ace_step(self.run.learner.net, self.run.learner.opt, xb, yb, n_new)

    def event_extra(self) -> dict:
        k = self.run.setup.dataset.num_classes
        return self.raw_event_extra(self.extra(0, k * self.cfg["batch_size"], 0, 0,
                                               "as latent replay, with the new samples' softmax taken over their "
                                               "own classes (a mask; no extra state)"))
