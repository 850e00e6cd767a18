"""The experiment drivers: a package each, bnrepro.experiments.<name>, whose DRIVER
(bnrepro.driver.Driver) `python experiments/<name>.py` runs. The ICS study on the Inception
proxy (`ics_proxy`) shares the ics package with the MNIST study: its DRIVER is in
bnrepro.experiments.ics.proxy."""

import importlib

from bnrepro.driver import Driver

# The module of each driver's DRIVER where it is not bnrepro.experiments.<name>.
MODULES = {"ics_proxy": "bnrepro.experiments.ics.proxy"}


def driver(name: str) -> Driver:
    """The Driver of `name`, one of bnrepro.driver.DRIVERS."""
    return importlib.import_module(MODULES.get(name, f"bnrepro.experiments.{name}")).DRIVER
