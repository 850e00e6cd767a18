"""How many DataLoader workers does one GPU need to feed BN-Inception at 224 px?

    python experiments/bench_loader.py [--images 1024] [--target 5091] [--json PATH]

Builds once (cached under --root) a synthetic ImageFolder of JPEGs at ImageNet-like sizes
(400-500 x 333-375 pixels, quality 90, smooth multi-scale noise: about 100 KB a file, as
ILSVRC-2012's are), then times the training transform exactly as
`bnrepro.inception_data.imagenet_datasets` builds it from configs/data/imagenet.yaml:

- images/s through a DataLoader of batch 256 with --workers worker processes (default 0, i.e.
  in-process, 1 and 2), in steady state: worker start-up and each worker's first batch are not
  counted;
- one image's time by stage: JPEG decode (PIL open + convert), then each transform;
- with CUDA, torchvision.io.decode_jpeg on the GPU (a batch of encoded files at once) followed
  by a random resized crop there, images/s.

Prints a table and one JSON line (also written to --json) holding the rates, the breakdown and
the workers needed for --target images/s: the default, 5,091, is BN-Inception's measured
training throughput on one H200 (bf16, channels_last). Files are read from the page cache, so
disk reads are not counted; the rates are those of this machine's CPU cores.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from bnrepro.driver import Parser, positive_int, script_args
from bnrepro.inception_data import imagenet_datasets
from bnrepro.paths import CONFIGS, RUNS

BATCH = 256
CLASSES = 4
PER_CLASS = 100
NOISE_OCTAVES = ((32, 80), (8, 50), (2, 28), (1, 12))  # (pixels per noise sample, amplitude)


def synthetic_image(rng: np.random.Generator) -> Image.Image:
    """An RGB image of ImageNet's typical size: sums of upsampled noise, coarse to fine."""
    width, height = int(rng.integers(400, 501)), int(rng.integers(333, 376))
    pixels = np.full((height, width, 3), 128.0, np.float32)
    for scale, amplitude in NOISE_OCTAVES:
        noise = rng.standard_normal((3, height // scale, width // scale)).astype(np.float32)
        channels = [
            Image.fromarray(c, mode="F").resize((width, height), Image.BICUBIC) for c in noise
        ]
        pixels += amplitude * np.stack([np.asarray(c) for c in channels], axis=-1)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def ensure_folder(root: Path) -> Path:
    """<root>/train/<class>/*.JPEG, built on the first call; returns the data root."""
    data_root = root / f"jpeg_{CLASSES}x{PER_CLASS}"
    done = data_root / "done"
    if done.exists():
        return data_root
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for label in range(CLASSES):
        folder = data_root / "train" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(PER_CLASS):
            synthetic_image(rng).save(folder / f"{index:04d}.JPEG", quality=90)
    done.touch()
    print(
        f"built {CLASSES * PER_CLASS} JPEGs in {data_root} in {time.perf_counter() - start:.1f} s"
    )
    return data_root


def training_set(data_root: Path):
    """The training ImageFolder of `imagenet_datasets`, with configs/data/imagenet.yaml."""
    data = OmegaConf.load(CONFIGS / "data" / "imagenet.yaml")
    data.root = str(data_root)
    data.num_classes = CLASSES
    data.val_dir = data.train_dir  # a validation folder is required; only training is timed
    settings = SimpleNamespace(distortion=data.distortion)  # the base recipe's distortion
    train_set, _ = imagenet_datasets(OmegaConf.create({"data": data}), settings)
    return train_set


def loader_rate(train_set, workers: int, images: int) -> float:
    """Steady-state images/s of a DataLoader of batch 256 with `workers` processes.

    Each worker's first batch (and, in-process, one batch) is a warm-up that also absorbs the
    workers' start-up; at least `images` are then timed from the last warm-up batch's arrival
    on, in a whole number of batches per worker so that every worker is busy throughout.
    """
    warmup = max(workers, 1)
    timed = warmup * math.ceil(images / (BATCH * warmup))
    sampler = torch.utils.data.RandomSampler(
        train_set, replacement=True, num_samples=(warmup + timed) * BATCH
    )
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=BATCH,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),  # as imagenet_pipeline
    )
    for step, _ in enumerate(loader, start=1):
        if step == warmup:
            start = time.perf_counter()
    return timed * BATCH / (time.perf_counter() - start)


def stage_times(train_set, count: int) -> dict[str, float]:
    """Mean milliseconds per image of decoding and of each training transform."""
    totals = {"decode": 0.0} | {type(t).__name__: 0.0 for t in train_set.transform.transforms}
    for path, _ in train_set.samples[:count]:
        start = time.perf_counter()
        with open(path, "rb") as file:
            image = Image.open(file).convert("RGB")
        totals["decode"] += time.perf_counter() - start
        for transform in train_set.transform.transforms:
            start = time.perf_counter()
            image = transform(image)
            totals[type(transform).__name__] += time.perf_counter() - start
    return {stage: 1000 * total / count for stage, total in totals.items()}


def gpu_rate(train_set, images: int) -> float:
    """Images/s of batched nvJPEG decoding on the GPU plus a random resized crop there."""
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms import functional

    crop = train_set.transform.transforms[0]  # the RandomResizedCrop
    files = [read_file(path) for path, _ in train_set.samples]
    batches = [
        [files[i % len(files)] for i in range(s, s + BATCH)] for s in range(0, images, BATCH)
    ]

    def decode_and_crop(batch: list[torch.Tensor]) -> torch.Tensor:
        crops = []
        for image in decode_jpeg(batch, device="cuda"):
            top, left, height, width = crop.get_params(image, crop.scale, crop.ratio)
            crops.append(functional.resized_crop(image, top, left, height, width, crop.size))
        return torch.stack(crops)

    decode_and_crop(batches[0])  # nvJPEG's initialization
    torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        decode_and_crop(batch)
    torch.cuda.synchronize()
    return len(batches) * BATCH / (time.perf_counter() - start)


def workers_needed_for(target: float, per_worker: float) -> int:
    """Worker processes that deliver `target` images/s at `per_worker` images/s each."""
    return math.ceil(target / per_worker)


def main() -> None:
    parser = Parser(
        prog="python experiments/bench_loader.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", type=Path, default=RUNS / "bench_loader")
    parser.add_argument(
        "--images",
        type=positive_int("--images", "timed images", 1024),
        default=1024,
        help="timed images per setting",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--breakdown-images",
        type=positive_int("--breakdown-images", "images", 100),
        default=100,
    )
    parser.add_argument("--target", type=float, default=5091.0, help="images/s to feed")
    parser.add_argument("--json", type=Path, help="also write the JSON line here")
    args = script_args(parser)
    torch.set_num_threads(1)  # as a DataLoader worker: one core per process

    train_set = training_set(ensure_folder(args.root))
    sizes = [Path(path).stat().st_size for path, _ in train_set.samples]
    print(
        f"{len(sizes)} JPEGs, mean {np.mean(sizes) / 1e3:.0f} KB; timing at least "
        f"{args.images} images per setting, batch {BATCH}, {torch.get_num_threads()} torch "
        f"thread, {len(os.sched_getaffinity(0))} CPUs available"
    )
    rates = {workers: loader_rate(train_set, workers, args.images) for workers in args.workers}
    breakdown = stage_times(train_set, args.breakdown_images)
    if torch.cuda.is_available():
        gpu = gpu_rate(train_set, args.images)
    else:
        gpu = None
        print("GPU decode: skipped, CUDA is not available")

    per_worker = {workers: rate / max(workers, 1) for workers, rate in rates.items()}
    print(f"\n{'workers':>8} {'images/s':>9} {'per worker':>11}")
    for workers, rate in rates.items():
        print(f"{workers:>8} {rate:>9.0f} {per_worker[workers]:>11.0f}")
    total = sum(breakdown.values())
    print(f"\none image, mean of {args.breakdown_images}: {total:.2f} ms")
    for stage, ms in breakdown.items():
        print(f"  {stage:<22} {ms:6.2f} ms  {100 * ms / total:3.0f} %")
    one_worker = per_worker[1] if 1 in per_worker else per_worker[min(per_worker)]
    needed = workers_needed_for(args.target, one_worker)
    print(
        f"\n{args.target:.0f} images/s at {one_worker:.0f} images/s a worker: {needed} workers "
        "(plus a core for the training process)"
    )
    if gpu is not None:
        print(f"GPU decode_jpeg + resized crop: {gpu:.0f} images/s")

    result = {
        "images_per_s": {str(w): round(r, 1) for w, r in rates.items()},
        "per_worker_images_per_s": {str(w): round(r, 1) for w, r in per_worker.items()},
        "breakdown_ms": {stage: round(ms, 3) for stage, ms in breakdown.items()},
        "target_images_per_s": args.target,
        "workers_needed_for_target": needed,
        "gpu_decode_crop_images_per_s": None if gpu is None else round(gpu, 1),
    }
    line = json.dumps(result)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    main()
