"""The training app's Hydra configs as the package `bnrepro.configs` (src/bnrepro/configs links
here), which Hydra reads as `pkg://bnrepro.configs` from a clone and from an installed wheel
alike: Hydra takes a package as a config source only where it has this file."""
