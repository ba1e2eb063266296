"""Feature extractors: Conv-4, ResNet-12 and torchvision classification networks.

Every backbone maps ``[B, C, H, W]`` images to ``[B, feature_dim]`` features and exposes
``feature_dim``, ``blocks`` (its stages in order, so fine-tuning can freeze the first L) and
``run_blocks(x, start, stop)``, which runs only blocks ``start..stop-1``: partial fine-tuning
computes the frozen blocks once per episode and trains on their output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """A ``[B, C, H, W]`` CPU image batch in channels-last memory order: same values, faster.

    oneDNN's CPU convolutions and max-pooling run on channels-last activations several
    times faster than on NCHW ones (max-pooling about 10x at 28x28), and every later layer
    keeps the layout of the first convolution's output. A single-channel batch is a trap:
    ``contiguous(memory_format=torch.channels_last)`` returns it unchanged (its layout is
    ambiguous) and PyTorch then picks NCHW for the whole network, so its strides are set
    explicitly here. Call it outside :func:`torch.vmap`, where the layout does not pay.
    Other devices and shapes are returned as they are.
    """
    if images.dim() != 4 or images.device.type != "cpu":
        return images
    if images.shape[1] == 1:
        n, _, h, w = images.shape
        return images.reshape(n, h, w, 1).permute(0, 3, 1, 2)
    return images.contiguous(memory_format=torch.channels_last)


POOLS = ("max", "ceil", "none", "globalmax", "globalavg")  # how a Conv4 block pools (see conv_block)


def conv_block(in_channels: int, out_channels: int, pool: str = "max") -> nn.Sequential:
    """3x3 conv, BatchNorm, 2x2 max-pool, ReLU: the unit of Conv-4 (Vinyals et al., Finn et al.).

    ReLU and max-pooling commute (both are monotone), so pooling first computes exactly
    the usual conv-BN-ReLU-pool block while the ReLU touches 4x fewer values. A 2x2 pool of
    an odd-sized map drops its last row and column (at 28x28 the third block's 7x7 becomes
    3x3, and the last block's 3x3 keeps only its top-left 2x2): ``pool="ceil"`` rounds the
    output size up instead, so every position is read. With ``"none"`` the block keeps its
    input's spatial size; ``"globalmax"`` takes the maximum over every position and
    ``"globalavg"`` the mean (after the ReLU, as ResNets pool).
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if pool == "globalavg":
        layers = [nn.ReLU(), nn.AdaptiveAvgPool2d(1)]  # the mean does not commute with ReLU
    else:
        pooling = {
            "max": [nn.MaxPool2d(2)],
            "ceil": [nn.MaxPool2d(2, ceil_mode=True)],
            "none": [],
            "globalmax": [nn.AdaptiveMaxPool2d(1)],
        }[pool]
        layers = [*pooling, nn.ReLU()]
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), *layers
    )


class Conv4(nn.Module):
    """Four conv blocks of ``width`` filters, flattened.

    28x28 Omniglot images give 64 x 1 x 1 = 64 features; 84x84 mini-ImageNet images give
    64 x 5 x 5 = 1,600 features (the standard variants). With ``last_pool="none"`` the last
    block does not pool, so the features keep where in the image each pattern was: 64 x 3 x 3
    = 576 features at 28x28, with the same parameters and nearly the same compute. With
    ``"globalmax"`` or ``"globalavg"`` it pools over all its positions: ``width`` features at
    any image size. ``ceil=True``: the first three blocks pool with ``"ceil"`` (28x28 maps
    go 14, 7, 4 instead of 14, 7, 3), so no row or column is dropped on the way.
    ``upsample=S``: the network first resizes its input to SxS (bilinear, no parameters), so
    the same filters see each stroke over more positions and every map is larger (28x28
    images at ``S=36`` give maps of 36, 18, 9 and 4): the images carry no more detail, the
    parameters are the same, the compute grows as ``(S / image_size)^2``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        image_size: int = 28,
        last_pool: str = "max",
        ceil: bool = False,
        upsample: int | None = None,
    ):
        super().__init__()
        if upsample is not None and upsample < image_size:
            raise ValueError(
                f"Conv4 upsample={upsample} would shrink the {image_size}x{image_size} images: "
                f"upsample to at least {image_size} (a -up<size> backbone), or not at all"
            )
        self.upsample = upsample
        inner = "ceil" if ceil else "max"
        self.blocks = nn.Sequential(
            *(
                conv_block(in_channels if i == 0 else width, width, pool=last_pool if i == 3 else inner)
                for i in range(4)
            )
        )
        pools = (inner,) * 3 + ((last_pool,) if last_pool in ("max", "ceil") else ())
        side = upsample or image_size
        for pool in pools:
            side = -(-side // 2) if pool == "ceil" else side // 2
        if side < 1:  # only floor pools can get there
            n = len(pools)
            raise ValueError(
                f"Conv4 needs images of at least {2**n}x{2**n} ({n} 2x2 pools), got {image_size}"
            )
        self.feature_dim = width * (1 if last_pool.startswith("global") else side * side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_blocks(x)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start..stop-1`` on ``x`` (images for ``start=0``, else what enters block
        ``start``); up to the end (``stop=None``) this gives the features."""
        if start == 0 and self.upsample is not None:
            x = F.interpolate(x, size=(self.upsample, self.upsample), mode="bilinear", align_corners=False)
        for block in list(self.blocks)[start:stop]:  # slicing the Sequential would build a new one
            x = block(x)
        return x.flatten(1) if stop is None else x


class ResidualBlock12(nn.Module):
    """ResNet-12 stage: three 3x3 conv-BN layers with a 1x1 shortcut, LeakyReLU, 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False)
            ]
            layers += [nn.BatchNorm2d(out_channels)]
            if i < 2:
                layers += [nn.LeakyReLU(0.1)]
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019): stages of 64-160-320-640 channels,
    global average pooling to 640 features."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (64, 160, 320, 640)):
        super().__init__()
        chans = (in_channels, *widths)
        self.blocks = nn.Sequential(*(ResidualBlock12(chans[i], chans[i + 1]) for i in range(len(widths))))
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_blocks(x)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start..stop-1`` on ``x``; up to the end, the pooled features (see Conv4)."""
        for block in list(self.blocks)[start:stop]:
            x = block(x)
        return x.mean(dim=(2, 3)) if stop is None else x


class TorchvisionBackbone(nn.Module):
    """A torchvision classification network (``resnet18``, ...) without its classifier.

    Grayscale inputs are repeated to three channels, and images in ``[0, 1]`` are normalised
    with the ImageNet mean and standard deviation first, as torchvision's pretrained weights
    expect (harmless for training from scratch: a fixed affine map of the input). Weights
    are never downloaded here: load a saved torchvision ``state_dict`` with
    ``pretrained=<path>``.
    """

    def __init__(self, name: str, in_channels: int = 3):
        super().__init__()
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"unknown torchvision model {name!r}; try resnet18, resnet34 or resnet50")
        net = torchvision.models.get_model(name, weights=None)
        if not hasattr(net, "fc"):
            raise ValueError(f"torchvision model {name!r} has no `fc` classifier to replace; use a ResNet")
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        self.in_channels = in_channels
        # Not persistent: the state_dict stays torchvision's own.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @property
    def blocks(self) -> list[nn.Module]:
        """The stem and the four residual stages, in order (not registered twice)."""
        net = self.net
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        return [stem, net.layer1, net.layer2, net.layer3, net.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_blocks(x)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start..stop-1`` on ``x``; images are normalised first, and up to the end
        the pooled features come out (see Conv4)."""
        if start == 0:
            if self.in_channels == 1:
                x = x.expand(-1, 3, -1, -1)
            x = (x - self.mean) / self.std
            if stop is None:  # the whole network (its classifier is an Identity): no stem to build
                return self.net(x)
        for block in self.blocks[start:stop]:
            x = block(x)
        return self.net.avgpool(x).flatten(1) if stop is None else x
