"""The Task the engine trains, for both stages: the conditional GAN (stage ``cgan``) and the GAN with
pool-model logit matching and the self-KD term (stage ``match``).

One engine step = one real batch = the generator's update and the critic's update (DiM does both
per batch). Both players live in one module and one Adam optimizer (DiM: Adam, betas (0, 0.9),
the same lr for both); their gradients are kept apart: the generator's losses see the critic's
weights detached, the critic's losses see generated images detached. So each player's gradient
is computed with the other's weights as they were at the start of the step (simultaneous
updates; DiM updates G first and then D on G's new output: recipes/dataset_distill/README.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import Dataset

from ..engine.dsa import DSA
from ..engine.errors import SkdError
from ..engine.rundir import RunDir
from ..engine.schedules import Progress
from ..engine.teachers import TeacherSignal, unwrap_model
from ..engine.trainer import Task
from .config import DistillConfig
from .data import PreparedImages
from .evaluate import FixedSet, TrainSpec, generate_fixed, train_models
from .loss import dim_logit_mse, discriminator_loss, generator_adversarial_loss, gradient_penalty, skd_logit_loss
from .model import ConditionalGAN, build_classifier
from .pool import PoolTeacher


class ImageSet(Dataset):
    """uint8 images + labels as ``{"images", "labels"}`` items."""

    def __init__(self, images: Tensor, labels: Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"images": self.images[i], "labels": self.labels[i]}


# -- stage-1 weights for stage 2 ----------------------------------------------------------------------------------
# DiM's gan_model.py module names, in forward order, for importing a DiM checkpoint (model_dict_*.pth)
DIM_GENERATOR = [
    "fc1",
    "bn0",
    "conv1",
    "bn1",
    "conv2",
    "bn2",
    "conv3",
    "bn3",
    "conv4",
    "bn4",
    "conv5",
    "bn5",
    "conv6",
    "bn6",
    "conv7",
    "bn7",
    "conv8",
]
DIM_DISCRIMINATOR = [name for i in range(1, 9) for name in (f"conv{i}", f"ln{i}")] + ["fc1", "fc10"]


def _ordered_prefixes(module: nn.Module) -> list[str]:
    """Names of the modules that own parameters, in registration (= forward) order."""
    return [name for name, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))]


def _from_dim(state: dict, module: nn.Module, dim_names: list[str], path: Path) -> dict:
    ours = _ordered_prefixes(module)
    if len(ours) != len(dim_names):
        raise SkdError(
            f"a DiM checkpoint needs the DiM architecture ({len(dim_names)} layers; this config has "
            f"{len(ours)}): use recipes/dataset_distill/cifar10.yaml / mnist.yaml sizes",
            path,
        )
    mapped = {}
    for mine, theirs in zip(ours, dim_names):
        for key, value in state.items():
            if key.startswith(theirs + "."):
                mapped[mine + key[len(theirs) :]] = value
    return mapped


def load_stage1(gan: ConditionalGAN, init: str) -> str:
    """Load stage-1 weights into ``gan``: a `cgan` run directory (its best or latest checkpoint), a
    model.safetensors, or DiM's own checkpoint dict (.pth/.pt, read with weights_only=True).
    Returns the file read."""
    if not init:
        raise SkdError(
            "stage match needs the stage-1 weights: --set match.init=RUN_DIR_OF_STAGE_CGAN "
            "(or a model.safetensors / a DiM model_dict_*.pth)"
        )
    path = Path(init)
    if path.is_dir():
        run = RunDir(path)
        weights = run.weights_for_eval() if run.checkpoints.is_dir() else (path / "model.safetensors")
        if weights is None or not weights.is_file():
            raise SkdError("holds no stage-1 weights (no checkpoint, no model.safetensors)", path)
        path = weights
    if not path.is_file():
        raise SkdError("stage-1 weights not found (match.init)", path)
    if path.suffix in (".pth", ".pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SkdError(f"cannot read as a weights-only torch checkpoint ({exc.__class__.__name__})", path) from exc
        if not isinstance(state, dict) or "generator" not in state or "discriminator" not in state:
            raise SkdError("expected DiM's checkpoint dict with 'generator' and 'discriminator' state dicts", path)
        for part, names in ((gan.generator, DIM_GENERATOR), (gan.discriminator, DIM_DISCRIMINATOR)):
            key = "generator" if part is gan.generator else "discriminator"
            mapped = _from_dim(state[key], part, names, path)
            try:
                part.load_state_dict(mapped, strict=True)
            except RuntimeError as exc:
                raise SkdError(f"DiM {key} does not fit this config: {str(exc).splitlines()[0]}", path) from exc
        return str(path)
    RunDir.load_weights(gan, path)
    return str(path)


# -- the Task ---------------------------------------------------------------------------------------------------------
class DistillTask(Task):
    def __init__(self, cfg: DistillConfig, data_dir: str | Path):
        self.cfg = cfg
        self.data = PreparedImages(data_dir)
        keep, dev = self.data.dev_split(cfg.data.dev_fraction)
        self.train_x, self.train_y = self.data.train_x[keep], self.data.train_y[keep]
        self.dev_x, self.dev_y = self.data.train_x[dev], self.data.train_y[dev]
        if len(self.train_y) < cfg.train.batch_size:
            raise SkdError(
                f"{len(self.train_y)} training images after the dev hold-out, fewer than one batch "
                f"(train.batch_size={cfg.train.batch_size})",
                data_dir,
            )
        self.num_classes = self.data.num_classes
        self.channels, self.size = self.data.shape[0], self.data.shape[1]
        if self.data.shape[1] != self.data.shape[2]:
            raise SkdError(
                f"images are {self.data.shape[1]}x{self.data.shape[2]}; the generator makes square images", data_dir
            )
        self.match_dsa = DSA(cfg.match.match_dsa)
        self.online_dsa = DSA(cfg.match.online_dsa)
        self.pool: PoolTeacher | None = None
        self.init_file: str | None = None
        if cfg.stage == "match":
            steps_per_epoch = len(self.train_y) // cfg.train.batch_size
            self.pool = PoolTeacher(
                cfg.match.pool,
                self.build_classifier,
                seed=cfg.train.seed,
                steps_per_draw=cfg.match.redraw_every_steps or steps_per_epoch,
                lr=cfg.match.online_lr,
                momentum=cfg.match.online_momentum,
                weight_decay=cfg.match.online_weight_decay,
                train_mode=cfg.match.pool_mode == "train",
            )

    # -- engine interface -------------------------------------------------------------------------------------
    def data_fingerprint(self) -> str | None:
        return self.data.info.get("fingerprint")

    def build_classifier(self, arch: str) -> nn.Module:
        return build_classifier(arch, self.cfg.classifier, self.channels, self.size, self.num_classes)

    def build_model(self) -> ConditionalGAN:
        gan = ConditionalGAN(self.cfg.generator, self.cfg.discriminator, self.channels, self.size, self.num_classes)
        if self.cfg.stage == "match":
            self.init_file = load_stage1(gan, self.cfg.match.init)
        return gan

    def train_dataset(self) -> ImageSet:
        return ImageSet(self.train_x, self.train_y)

    def eval_dataset(self) -> ImageSet | None:
        return ImageSet(self.dev_x, self.dev_y) if len(self.dev_y) else None

    def teachers(self) -> dict[str, TeacherSignal]:
        return {"pool": self.pool} if self.pool is not None else {}

    # -- the step ------------------------------------------------------------------------------------------------------
    def _online_batches(self, device: torch.device):
        """DiM train_match_model: ``online_batches`` real batches (without replacement within the
        step), normalised and augmented per image."""
        b, k, n = self.cfg.train.batch_size, self.cfg.match.online_batches, len(self.train_y)
        perm = torch.cat([torch.randperm(n) for _ in range(max(1, math.ceil(k * b / n)))])
        for i in range(k):
            idx = perm[i * b : (i + 1) * b]
            x = self.data.classifier_input(self.data.to_gan(self.train_x[idx].to(device)))
            yield (self.online_dsa(x) if self.online_dsa.enabled else x), self.train_y[idx].to(device)

    def _match(self, x_real: Tensor, x_syn: Tensor, progress: Progress, logs: dict) -> Tensor:
        m = self.cfg.match
        assert self.pool is not None
        self.pool.to(x_real.device)
        if self.pool.ensure_drawn(progress.step):
            logs["pool/draw"] = float(self.pool.draw_index)
        logs["pool/online_ce"] = self.pool.train_online(self._online_batches(x_real.device))
        logs["pool/arch"] = float(m.pool.index(self.pool.arch))
        f = self.pool.frozen()
        xr, xs = self.data.classifier_input(x_real), self.data.classifier_input(x_syn)
        if self.match_dsa.enabled:  # Siamese: the same parameters for the real and the generated half
            b, _, h, w = xr.shape
            if m.match_dsa_same_on_batch:
                params = self.match_dsa.sample(2 * b, h, w, same_on_batch=True, device=xr.device)
                both = self.match_dsa.apply(torch.cat([xr, xs]), params)
                xr, xs = both[:b], both[b:]
            else:
                params = self.match_dsa.sample(b, h, w, device=xr.device)
                xr, xs = self.match_dsa.apply(xr, params), self.match_dsa.apply(xs, params)
        with torch.no_grad():
            real_logits = f(xr)
        syn_logits = f(xs)
        loss = torch.zeros((), device=x_real.device)
        if m.mse_weight > 0:
            mse = dim_logit_mse(real_logits, syn_logits)
            loss = loss + m.mse_weight * mse
            logs["loss/match_mse"] = mse.detach()
        if m.skd_weight > 0:
            skd = skd_logit_loss(real_logits, syn_logits, m.skd_temperature, m.skd_standardize)
            loss = loss + m.skd_weight * skd
            logs["loss/match_skd"] = skd.detach()
        logs["weight/mse"], logs["weight/skd"] = m.mse_weight, m.skd_weight
        return loss

    def compute_loss(self, model: nn.Module, batch: dict, progress: Progress) -> tuple[Tensor, dict]:
        gan: ConditionalGAN = unwrap_model(model)
        gen, disc = gan.generator, gan.discriminator
        g_cfg = self.cfg.gan
        x_real = self.data.to_gan(batch["images"])
        y_real = batch["labels"]
        logs: dict = {}
        # generator: noise carrying the real batch's labels (DiM), judged by the critic's detached weights
        x_syn = gen(gan.noise(y_real))
        frozen = {k: v.detach() for k, v in disc.named_parameters()}
        source, classes = functional_call(disc, frozen, (x_syn,))
        loss_g, terms = generator_adversarial_loss(source, classes, y_real, g_cfg.class_weight)
        logs.update({k: v.detach() for k, v in terms.items()})
        if self.cfg.stage == "match":
            loss_g = loss_g + self._match(x_real, x_syn, progress, logs)
        # critic: fresh noise with random labels, generated images detached (DiM's D step)
        y_fake = torch.randint(self.num_classes, (len(y_real),)).to(y_real.device)
        with torch.no_grad():
            x_fake = gen(gan.noise(y_fake))
        b = len(y_real)
        source, classes = disc(torch.cat([x_fake, x_real]))  # one pass: LayerNorm is per image
        src_fake, cls_fake, src_real, cls_real = source[:b], classes[:b], source[b:], classes[b:]
        penalty = gradient_penalty(disc, x_real, x_fake)
        loss_d, terms = discriminator_loss(
            src_fake, cls_fake, y_fake, src_real, cls_real, y_real, penalty, g_cfg.gp_weight, g_cfg.class_weight
        )
        logs.update({k: v.detach() for k, v in terms.items()})
        logs["loss/generator"], logs["loss/critic"] = loss_g.detach(), loss_d.detach()
        logs["d_real_acc"] = (cls_real.argmax(1) == y_real).float().mean()
        return loss_g + loss_d, logs

    # -- checkpoint selection on the dev split -------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        """dev_top1: a fresh ``select.arch`` trained on a fixed generated set of ``select.ipc``
        images per class, scored on the dev images held out of train; plus the critic's class
        accuracy on them. Never touches the test split."""
        gan: ConditionalGAN = unwrap_model(model)
        sel = self.cfg.select
        images, labels = generate_fixed(gan.generator, sel.ipc, self.num_classes, seed=self.cfg.train.seed + 1)
        dev_x = self.data.to_gan(self.dev_x.to(device))
        spec = TrainSpec(
            steps=sel.steps,
            lr=self.cfg.eval.lr,
            momentum=self.cfg.eval.momentum,
            weight_decay=self.cfg.eval.weight_decay,
            dsa=self.cfg.eval.dsa,
        )
        with torch.enable_grad():
            result = train_models(
                lambda: self.build_classifier(sel.arch),
                [self.cfg.train.seed],
                [FixedSet(images, labels, sel.batch_size)],
                spec,
                self.data.classifier_input,
                self.data.classifier_input(dev_x),
                self.dev_y,
                vectorize=False,
                device=device,
            )
        _, classes = gan.discriminator(dev_x)
        return {
            "dev_top1": result["curves"][0][-1][1],
            "disc_dev_acc": float((classes.argmax(1).cpu() == self.dev_y).float().mean() * 100),
        }
