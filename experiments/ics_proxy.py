"""`python experiments/ics_proxy.py run|collect|draw`: see bnrepro.experiments.ics.proxy."""

from bnrepro.experiments.ics.proxy import DRIVER

if __name__ == "__main__":
    DRIVER.main()
