"""bnrepro: a reproducible experiment suite for Batch Normalization (Ioffe & Szegedy, 2015).

Importing the package registers the resolver `${bnrepro.root:}` (bnrepro.paths.REPO), by
which configs/paths/default.yaml names the training app's folders: Hydra imports the package
to read its configs (pkg://bnrepro.configs), so the resolver is there before any config is."""

from omegaconf import OmegaConf

from bnrepro.paths import REPO

if not OmegaConf.has_resolver("bnrepro.root"):
    OmegaConf.register_new_resolver("bnrepro.root", lambda: str(REPO))
