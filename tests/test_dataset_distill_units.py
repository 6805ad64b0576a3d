"""dataset-distill units: losses against hand-computed values, the DSA engine module, the models,
the pool teacher's exact resume, vectorised == one-at-a-time evaluation, DiM checkpoint import."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from skdcli.dataset_distill.config import ClassifierConfig, DiscriminatorConfig, DistillConfig, GeneratorConfig
from skdcli.dataset_distill.evaluate import (
    FixedSet,
    OnTheFly,
    TrainSpec,
    generate_fixed,
    random_real_subset,
    select_top1,
    train_models,
)
from skdcli.dataset_distill.loss import (
    dim_logit_mse,
    discriminator_loss,
    generator_adversarial_loss,
    gradient_penalty,
    skd_logit_loss,
)
from skdcli.dataset_distill.model import (
    ConditionalGAN,
    ConvNet,
    Discriminator,
    Generator,
    ResNet,
    Sampler,
    build_classifier,
    conditional_noise,
)
from skdcli.dataset_distill.pool import PoolTeacher
from skdcli.dataset_distill.task import DIM_DISCRIMINATOR, DIM_GENERATOR, _ordered_prefixes, load_stage1
from skdcli.engine.dsa import DSA, cutout_mask, translate
from skdcli.engine.errors import SkdError


# -- losses, by hand --------------------------------------------------------------------------------------------
class LinearCritic(torch.nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so GP = (||w|| - 1)^2 exactly."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1), torch.zeros(len(x), 2)


def test_gradient_penalty_of_a_linear_critic() -> None:
    w = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]])  # ||w|| = 5
    critic = LinearCritic(w)
    gp = gradient_penalty(critic, torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2))
    assert gp.item() == pytest.approx((5.0 - 1.0) ** 2)
    gp.backward()  # the penalty is differentiable in the critic's weights: d/dw (||w||-1)^2 = 2(||w||-1) w/||w||
    assert torch.allclose(critic.w.grad, 2 * 4 * w / 5)


def test_discriminator_and_generator_losses_by_hand() -> None:
    ln3 = math.log(3.0)
    src_fake, src_real = torch.tensor([1.0, 3.0]), torch.tensor([0.5, 1.5])
    logits = torch.tensor([[0.0, 0.0], [ln3, 0.0]])
    labels = torch.tensor([0, 0])
    ce = (math.log(2.0) - math.log(0.75)) / 2  # -log 1/2 and -log 3/4
    loss, terms = discriminator_loss(
        src_fake, logits, labels, src_real, logits, labels, torch.tensor(0.25), gp_weight=10.0, class_weight=1.0
    )
    assert terms["loss/d_wasserstein"].item() == pytest.approx(2.0 - 1.0)
    assert terms["loss/d_class"].item() == pytest.approx(2 * ce)
    assert loss.item() == pytest.approx(1.0 + 2 * ce + 2.5)
    loss, terms = generator_adversarial_loss(src_fake, logits, labels, class_weight=0.5)
    assert loss.item() == pytest.approx(-2.0 + 0.5 * ce) and terms["loss/g_adversarial"].item() == -2.0


def test_dim_logit_mse_by_hand() -> None:
    real = torch.tensor([[0.0, 0.0]])
    syn = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    d0 = -math.log(2) - math.log(0.75)
    d1 = -math.log(2) - math.log(0.25)
    assert dim_logit_mse(real, syn).item() == pytest.approx((d0**2 + d1**2) / 2)


def _softmax(v: list[float]) -> list[float]:
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def test_skd_logit_loss_by_hand_and_its_gradient_path() -> None:
    real = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    syn = torch.tensor([[0.0, 0.0, 3.0]], requires_grad=True)
    z_real = [-1.0, 0.0, 1.0]  # mean 2, unbiased std 1
    s = math.sqrt(3.0)  # mean 1, unbiased std sqrt(3)
    z_syn = [-1 / s, -1 / s, 2 / s]
    t = 2.0
    p, q = _softmax([v / t for v in z_real]), _softmax([v / t for v in z_syn])
    expected = t**2 * sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    loss = skd_logit_loss(real, syn, temperature=t, standardize=True)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert real.grad is None and syn.grad is not None and syn.grad.abs().sum() > 0
    # standardisation makes it blind to shift and positive scale of either side
    shifted = skd_logit_loss(5 * real.detach() - 7, 0.5 * syn.detach() + 3, temperature=t, standardize=True)
    assert shifted.item() == pytest.approx(expected, rel=1e-5)
    raw = skd_logit_loss(real.detach(), syn.detach(), temperature=t, standardize=False)
    p, q = _softmax([v / t for v in [1.0, 2.0, 3.0]]), _softmax([v / t for v in [0.0, 0.0, 3.0]])
    assert raw.item() == pytest.approx(t**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)), rel=1e-5)


# -- DSA (engine/dsa.py) ------------------------------------------------------------------------------------------
def test_translate_and_cutout_by_hand() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    out = translate(x, torch.tensor([1]), torch.tensor([0]))  # out[i, j] = x[i + 1, j]
    assert out[0, 0].tolist() == [[3.0, 4.0, 5.0], [6.0, 7.0, 8.0], [0.0, 0.0, 0.0]]
    out = translate(x, torch.tensor([0]), torch.tensor([-1]))  # out[i, j] = x[i, j - 1]
    assert out[0, 0].tolist() == [[0.0, 0.0, 1.0], [0.0, 3.0, 4.0], [0.0, 6.0, 7.0]]
    mask = cutout_mask(4, 4, torch.tensor([0, 2]), torch.tensor([0, 3]), 2, 2)
    assert mask[0].tolist() == [[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert mask[1].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_dsa_color_by_hand() -> None:
    dsa = DSA("color")
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    params = dsa.sample(1, 2, 2)
    params.values.update(brightness=torch.tensor([0.75]), saturation=torch.tensor([0.3]), contrast=torch.tensor([0.0]))
    out = dsa.apply(x, params)
    b = x + 0.25  # brightness (r - 0.5) * 1; saturation is the identity on one channel
    expected = (b - b.mean()) * 0.5 + b.mean()  # contrast factor r + 0.5
    assert torch.allclose(out, expected)


def test_dsa_siamese_same_params_and_determinism() -> None:
    dsa = DSA("color_crop_cutout")
    real, syn = torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8, requires_grad=True)
    params = dsa.sample(6, 8, 8, generator=torch.Generator().manual_seed(1))
    again = dsa.sample(6, 8, 8, generator=torch.Generator().manual_seed(1))
    assert params.choice == again.choice and all(torch.equal(params.values[k], again.values[k]) for k in params.values)
    # the same parameters on two copies of one batch give the same output (the Siamese property)
    assert torch.equal(dsa.apply(real, params), dsa.apply(real.clone(), params))
    dsa.apply(syn, params).sum().backward()
    assert syn.grad is not None and syn.grad.abs().sum() > 0
    shared = dsa.sample(6, 8, 8, same_on_batch=True)
    assert all(bool((v == v[0]).all()) for v in shared.values.values())
    with pytest.raises(ValueError, match="unknown DSA op"):
        DSA("color_blur")
    assert torch.equal(DSA("none")(real), real)


@pytest.mark.parametrize("op", ["scale", "rotate", "flip", "crop"])
def test_dsa_geometric_ops_keep_shape(op: str) -> None:
    x = torch.randn(4, 1, 8, 8)
    assert DSA(op)(x).shape == x.shape


# -- models ----------------------------------------------------------------------------------------------------------
def test_conditional_noise_writes_the_one_hot_label() -> None:
    labels = torch.tensor([3, 0, 9])
    z = conditional_noise(labels, 16, 10, torch.Generator().manual_seed(0))
    assert torch.equal(z[:, :10], F.one_hot(labels, 10).float()) and z.shape == (3, 16)
    assert z[:, 10:].std() > 0.1


@pytest.mark.parametrize("size,ups,convs,channels", [(8, 2, [1, 0], 1), (28, 3, [3, 1, 0], 1), (32, 3, [3, 1, 0], 3)])
def test_generator_and_discriminator_shapes(size: int, ups: int, convs: list[int], channels: int) -> None:
    gen = Generator(
        GeneratorConfig(noise_dim=20, channels=8, upsamples=ups, convs_after_upsample=convs), channels, size, 10
    )
    x = gen(torch.randn(4, 20))
    assert x.shape == (4, channels, size, size) and x.abs().max() <= 1
    if size == 28:
        assert gen.sizes == [4, 7, 14, 28]  # DiM's 28x28 path (kernel-3 transposed conv first)
    disc = Discriminator(DiscriminatorConfig(channels=8, strides=[1, 2, 1, 2, 1, 1, 1, 2]), channels, size, 10)
    source, classes = disc(x)
    assert source.shape == (4,) and classes.shape == (4, 10)


def test_classifiers() -> None:
    cfg = ClassifierConfig(convnet_width=8, resnet_width=4)
    assert ConvNet(1, 28, 10, width=8).classifier.in_features == 8 * 4 * 4  # 28 -> 32 by the first conv's padding
    for arch in ("convnet", "resnet10", "resnet18", "resnet10_ap", "resnet18_ap"):
        model = build_classifier(arch, cfg, 3, 32, 10)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10), arch
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in build_classifier("resnet10_ap", cfg, 3, 32, 10).modules()) > 0
    assert len(ResNet(1, 10, depth=18, width=4).blocks) == 8


def test_sampler_writes_the_label() -> None:
    gen = Generator(GeneratorConfig(noise_dim=16, channels=8), 1, 8, 10).eval()
    z = torch.randn(3, 16)
    labels = torch.tensor([1, 2, 3])
    expected = (gen(torch.cat([F.one_hot(labels, 10).float(), z[:, 10:]], 1)) + 1) / 2
    assert torch.allclose(Sampler(gen)(z, labels), expected)


# -- pool teacher ------------------------------------------------------------------------------------------------------
def _pool(seed: int = 0) -> PoolTeacher:
    cfg = ClassifierConfig(convnet_width=4, resnet_width=2)
    return PoolTeacher(
        ["convnet", "resnet10"], lambda a: build_classifier(a, cfg, 1, 8, 10), seed=seed, steps_per_draw=2
    )


def _batches(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(10, (8,), generator=g)) for _ in range(n)]


def test_pool_draws_are_a_function_of_seed_and_index() -> None:
    a, b = _pool(), _pool()
    archs = []
    for step in range(12):
        assert a.ensure_drawn(step) == (step % 2 == 0)
        b.ensure_drawn(step)
        archs.append(a.arch)
        assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert set(archs) == {"convnet", "resnet10"}
    torch.manual_seed(123)  # the global RNG does not change a draw
    c = _pool()
    c.ensure_drawn(0)
    a2 = _pool()
    a2.ensure_drawn(0)
    assert all(torch.equal(p, q) for p, q in zip(a2.model.state_dict().values(), c.model.state_dict().values()))


def test_pool_state_roundtrip_continues_identically(tmp_path: Path) -> None:
    a = _pool()
    a.ensure_drawn(0)
    a.train_online(_batches(3, 0))
    torch.save(a.state_dict(), tmp_path / "state.pt")
    b = _pool()
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert b.arch == a.arch and b.online_steps == 3
    a.train_online(_batches(2, 1))
    b.train_online(_batches(2, 1))
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    frozen = a.frozen()
    assert not any(p.requires_grad for p in frozen.parameters())
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    frozen(x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in frozen.parameters())


# -- evaluation --------------------------------------------------------------------------------------------------------
def test_vectorised_training_equals_one_model_at_a_time() -> None:
    cfg = ClassifierConfig(convnet_width=4, resnet_width=2)
    g = torch.Generator().manual_seed(0)
    sets = [(torch.rand(30, 1, 8, 8, generator=g) * 2 - 1, torch.arange(30) % 10) for _ in range(3)]
    test_x, test_y = torch.randn(200, 1, 8, 8, generator=g), torch.randint(10, (200,), generator=g)
    for arch in ("convnet", "resnet10"):  # instance norm; batch norm with running statistics
        runs = []
        for vectorize in (True, False):
            sources = [FixedSet(x, y, 16) for x, y in sets]
            runs.append(
                train_models(
                    lambda a=arch: build_classifier(a, cfg, 1, 8, 10),
                    [0, 1, 2],
                    sources,
                    TrainSpec(steps=6, test_every_steps=3),
                    lambda v: v,
                    test_x,
                    test_y,
                    vectorize=vectorize,
                )
            )
        for vec, loop in zip(*(r["curves"] for r in runs)):
            assert [s for s, _ in vec] == [3, 6]
            assert max(abs(a - b) for (_, a), (_, b) in zip(vec, loop)) <= 1.0, arch  # at most 2 of 200 flip


def test_fixed_generation_is_reproducible_and_on_the_fly_counts() -> None:
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(noise_dim=16, channels=8), 1, 8, 10)
    x1, y1 = generate_fixed(gen, 3, 10, seed=5)
    x2, _ = generate_fixed(gen, 3, 10, seed=5)
    assert torch.equal(x1, x2) and y1.tolist() == [c for c in range(10) for _ in range(3)]
    assert OnTheFly(gen, 10, 10, 64, plus_one=True).steps_per_epoch == 2
    with pytest.raises(ValueError, match="trains nothing"):
        OnTheFly(gen, 1, 10, 64, plus_one=False)
    x, y = random_real_subset(torch.arange(100.0).view(100, 1, 1, 1), torch.arange(100) % 10, 2, 10, seed=0)
    assert sorted(y.tolist()) == sorted([c for c in range(10)] * 2)
    assert select_top1([(1, 50.0), (2, 70.0), (3, 60.0)], "last") == 60.0
    assert select_top1([(1, 50.0), (2, 70.0), (3, 60.0)], "best_on_test") == 70.0


# -- stage-1 weights from DiM's own checkpoint format ------------------------------------------------------------------
def test_load_dim_checkpoint(tmp_path: Path) -> None:
    cfg = DistillConfig()
    cfg.generator = GeneratorConfig(noise_dim=100, channels=8, upsamples=3, convs_after_upsample=[3, 1, 0])
    cfg.discriminator = DiscriminatorConfig(channels=8, strides=[1, 2, 1, 2, 1, 1, 1, 2])
    source = ConditionalGAN(cfg.generator, cfg.discriminator, 3, 32, 10)

    def to_dim(module: torch.nn.Module, names: list[str]) -> dict:
        mapping = dict(zip(_ordered_prefixes(module), names))
        return {mapping[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]: v for k, v in module.state_dict().items()}

    torch.save(
        {
            "generator": to_dim(source.generator, DIM_GENERATOR),
            "discriminator": to_dim(source.discriminator, DIM_DISCRIMINATOR),
            "optim_g": {},
            "optim_d": {},
        },
        tmp_path / "model_dict_convnet.pth",
    )
    target = ConditionalGAN(cfg.generator, cfg.discriminator, 3, 32, 10)
    load_stage1(target, str(tmp_path / "model_dict_convnet.pth"))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    small = ConditionalGAN(GeneratorConfig(), DiscriminatorConfig(), 3, 32, 10)
    with pytest.raises(SkdError, match="needs the DiM architecture"):
        load_stage1(small, str(tmp_path / "model_dict_convnet.pth"))
    with pytest.raises(SkdError, match="stage match needs the stage-1 weights"):
        load_stage1(small, "")
    with pytest.raises(SkdError, match="stage-1 weights not found"):
        load_stage1(small, str(tmp_path / "nope.safetensors"))
