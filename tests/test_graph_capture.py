"""The captured graph: real library models, user-written modules, the semantics a user relies on."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from realmodels import torchvision_models
from test_network import check_against_autograd
from tinycl import from_torch
from tinycl.errors import UnsupportedLayerError
from tinycl.graph import capture
from tinycl.kernels.optim import SGD

D = torch.float64


def _no_randomness(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout) or type(m).__name__ == "StochasticDepth":
            m.p = 0.0
    return model


TORCHVISION = ["mobilenet_v2", "mobilenet_v3_small", "resnet18", "shufflenet_v2_x0_5"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_model_matches_autograd(name):
    model = _no_randomness(getattr(torchvision_models(), name)(num_classes=10))
    check_against_autograd(model, (3, 64, 64), batch=2)


class UserResNet(nn.Module):
    """A residual network as users write it: its own forward, functional ops, a tensor read twice."""

    def __init__(self, c=8, classes=5):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.short = nn.Conv2d(c, 2 * c, 1, stride=2)
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = x + F.relu(self.conv1(x))          # x read twice
        y = self.conv2(x) + self.short(x)
        y = torch.relu(y) * torch.sigmoid(y.mean((2, 3), keepdim=True))  # squeeze-excitation style gate
        return self.fc(torch.flatten(y.mean((2, 3)), 1))


def test_user_written_residual_network():
    check_against_autograd(UserResNet(), (3, 9, 9), batch=3)


def test_functional_names_follow_module_paths():
    tvm = torchvision_models()
    g = capture(tvm.resnet18(num_classes=10), (3, 32, 32))
    names = [n.name for n in g.nodes]
    assert "layer2.0.add" in names and "layer2.0.conv1" in names
    assert "layer1.0.relu@1" in names  # torchvision's BasicBlock calls self.relu twice
    assert g.resolve("layer3") == "layer3.1.relu@1"  # a module names its output node
    front, back = g.split("layer3")
    assert front.output == "layer3.1.relu@1" and back.nodes[0].shape == (256, 2, 2)


def test_module_called_twice_shares_weights_and_sums_gradients():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            return self.out(torch.tanh(self.lin(torch.tanh(self.lin(x)))))

    net = check_against_autograd(Twice(), (4,), batch=3)
    assert set(net.named_grads()) == {"lin.weight", "lin.bias", "out.weight", "out.bias"}


def test_frozen_parameters_get_no_gradient_and_no_update():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 3)).to(D)
    for p in model[0].parameters():
        p.requires_grad_(False)
    net = from_torch(model, (2, 5, 5))
    before = net.state_dict()
    x, y = torch.randn(4, 2, 5, 5, dtype=D), torch.randint(0, 3, (4,))
    net.train_step(x, y, SGD(lr=0.5))
    after = net.state_dict()
    assert torch.equal(before["0.weight"], after["0.weight"]) and torch.equal(before["0.bias"], after["0.bias"])
    assert not torch.equal(before["3.weight"], after["3.weight"])
    out = net.forward(x)
    net.backward(torch.ones_like(out), need_input=False)
    assert set(net.named_grads()) == {"3.weight", "3.bias"}
    assert net.root.ops["0"].saved is None  # backward stopped before the frozen conv


def test_forward_hook_is_refused_by_name():
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 2)))
    model[1][1].register_forward_hook(lambda m, i, o: o * 2)
    with pytest.raises(UnsupportedLayerError, match=r"module '1\.1' \(Linear\) has a forward hook"):
        from_torch(model, (3,))


def test_parametrization_and_weight_norm_are_refused():
    from torch.nn.utils import parametrizations, weight_norm
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    parametrizations.orthogonal(m[0])
    with pytest.raises(UnsupportedLayerError, match=r"module '0' \(ParametrizedLinear\) has a parametrization"):
        from_torch(m, (3,))
    m = nn.Sequential(nn.Linear(3, 3), weight_norm(nn.Linear(3, 2)))
    with pytest.raises(UnsupportedLayerError, match=r"module '1' \(Linear\) uses weight_norm"):
        from_torch(m, (3,))


def test_data_dependent_branch_is_refused_with_module_and_line():
    class Branchy(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    model = nn.Sequential(nn.Linear(3, 3), Branchy())
    with pytest.raises(UnsupportedLayerError, match=r"module '1' \(Branchy\).*branch.*test_graph_capture.py:\d+"):
        from_torch(model, (3,))


def test_ops_that_touch_the_batch_are_refused():
    class BatchMean(nn.Module):
        def forward(self, x):
            return x - x.mean(0, keepdim=True)

    with pytest.raises(UnsupportedLayerError, match=r"op 'mean' .*batch"):
        from_torch(nn.Sequential(nn.Linear(3, 3), BatchMean()), (3,))


def test_channel_shuffle_split_cat_and_slicing():
    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 4, 1)
            self.fc = nn.Linear(8 * 3 * 3, 3)

        def forward(self, x):
            l, r = x.chunk(2, dim=1)
            y = torch.cat((l, self.a(r)), dim=1)
            n, c, h, w = y.size()
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
            y = torch.cat([y, y[:, 2:6] * 0.5], 1)[:, :, 1:, ::2]
            y = y.permute(0, 2, 3, 1)  # a 3-cycle: its backward needs the inverse permutation
            return self.fc(y.reshape(y.size(0), -1)[:, :72])

    check_against_autograd(Shuffle(), (8, 4, 5), batch=2)


def test_more_torchvision_models_ceil_mode_pools_and_stochastic_depth():
    tvm = torchvision_models()
    check_against_autograd(_no_randomness(tvm.squeezenet1_1(num_classes=10)), (3, 48, 48), batch=2)
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.34)   # B0's ops, slim
    check_against_autograd(_no_randomness(EfficientNet(setting, 0.2, num_classes=10, last_channel=last)),
                           (3, 48, 48), batch=3)


def test_timm_models_batchnormact_layernorm2d_and_layer_scale():
    import timm  # installed without dependencies by `make` (see Makefile)
    for name in ("lcnet_050", "convnext_atto"):
        check_against_autograd(_no_randomness(timm.create_model(name, num_classes=10)), (3, 32, 32), batch=2)


def test_mcunet_style_network():
    from mcunet.tinynas.nn.modules import ConvLayer, IdentityLayer, LinearLayer, MBInvertedConvLayer
    from mcunet.tinynas.nn.networks.proxyless_nets import MobileInvertedResidualBlock, ProxylessNASNets
    blocks = []
    for cin, cout, k, s, e in [(16, 8, 3, 1, 1), (8, 16, 5, 2, 3), (16, 16, 3, 1, 4), (16, 24, 7, 2, 6)]:
        short = IdentityLayer(cin, cin) if s == 1 and cin == cout else None
        blocks.append(MobileInvertedResidualBlock(MBInvertedConvLayer(cin, cout, k, s, expand_ratio=e), short))
    model = ProxylessNASNets(ConvLayer(3, 16, 3, stride=2, act_func="relu6"), blocks,
                             ConvLayer(24, 32, 1, act_func="relu6"), LinearLayer(32, 10))
    check_against_autograd(_no_randomness(model), (3, 32, 32), batch=2)


class SequenceNet(nn.Module):
    """A keyword-spotting style 1-d model with the remaining primitives."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 5, stride=2, padding=2)
        self.bn = nn.BatchNorm1d(8)
        self.pool = nn.MaxPool1d(3, 2, ceil_mode=True)
        self.avg = nn.AvgPool1d(3, 2, padding=1, count_include_pad=False)
        self.norm = nn.LayerNorm(8)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.img = nn.Conv2d(1, 2, 3, padding=1)
        self.ada = nn.AdaptiveAvgPool2d((3, 2))
        self.fc = nn.Linear(12, 6)
        self.bn1 = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        y = self.avg(self.pool(F.gelu(self.bn(self.conv(x)))))         # N, 8, L
        y = self.norm(y.transpose(1, 2))                                # N, L, 8: LayerNorm over channels
        y = torch.tanh(y).unsqueeze(1)                                  # N, 1, L, 8
        y = self.ada(F.silu(self.img(self.up(y))))                      # N, 2, 3, 2
        y = F.hardswish(self.fc(y.flatten(1)))
        return self.head(self.bn1(y))


def test_one_dimensional_and_remaining_primitives():
    check_against_autograd(SequenceNet(), (4, 37), batch=3)


class MoreOps(nn.Module):
    """Dilated, transposed and padded convs, group norm, PReLU, ELU, Softplus, Mish, softmax."""

    def __init__(self):
        super().__init__()
        self.dil = nn.Conv2d(3, 8, 3, padding=2, dilation=2)
        self.gn = nn.GroupNorm(4, 8)
        self.act = nn.PReLU(8)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding="valid")
        self.up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.tcn = nn.Conv1d(4, 6, 3, padding=2, dilation=2)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        y = self.act(self.gn(self.dil(x)))
        y = F.elu(self.down(F.pad(y, (1, 0, 1, 0))), alpha=0.7)
        y = F.mish(self.up(y))                                   # N, 4, H, W
        y = F.softplus(self.tcn(y.flatten(2)), beta=2.0)         # N, 6, HW
        y = y * torch.softmax(y, dim=2)                          # attention-style pooling weights
        return F.log_softmax(self.fc(y.sum(2)), dim=1)


def test_dilated_transposed_padded_convs_group_norm_and_more_activations():
    check_against_autograd(MoreOps(), (3, 9, 9), batch=3)


def test_dilated_and_transposed_conv_macs_by_hand():
    from tinycl.graph.counts import node_counts
    g = capture(MoreOps(), (3, 9, 9))
    assert node_counts(g["dil"], g)["forward"] == 8 * 9 * 9 * 3 * 9          # out pixels x cin x taps
    up_in = g[g["up"].inputs[0]].shape                                       # (8, 4, 4)
    assert node_counts(g["up"], g)["forward"] == 8 * up_in[1] * up_in[2] * 4 * 9   # in pixels x cout x taps
    assert g["up"].shape == (4, 8, 8) and g["tcn"].op == "conv_general"


class ShapeBranch(nn.Module):
    """A branch on a tensor's shape: fx cannot trace it, torch.export (the fallback) can."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.shape[-1] > 4:
            x = self.conv(x)
        return self.fc(torch.relu(self.bn(x)).mean((2, 3)))


def test_torch_export_fallback_for_shape_branches():
    net = check_against_autograd(ShapeBranch(), (3, 8, 8), batch=3)
    assert [n.name for n in net.graph.compute_nodes()] == ["conv", "bn", "relu", "mean", "fc"]
    assert net.graph.resolve("bn") == "bn"


@pytest.mark.parametrize("module, shape", [(lambda: nn.BatchNorm2d(8), (8, 5, 5)), (lambda: nn.BatchNorm1d(6), (6,)),
                                           (lambda: nn.Conv2d(3, 4, 3), (3, 6, 6)), (lambda: nn.Linear(5, 3), (5,))])
def test_a_single_library_module_as_the_whole_model(module, shape):
    """A bare module (no container around it) is captured with its own parameter and buffer names;
    a root batch norm keeps its step counter (it crashed with a KeyError before)."""
    check_against_autograd(module(), shape, batch=3)
    m = module()
    net = from_torch(m, shape)
    assert set(net.state_dict()) == set(m.state_dict())
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        before = int(m.num_batches_tracked)
        net.train().forward(torch.randn(3, *shape))
        assert int(net.state_dict()["num_batches_tracked"]) == before + 1
