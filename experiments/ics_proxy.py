"""`python experiments/ics_proxy.py run|collect|draw`: see bnrepro.experiments.ics_proxy."""

from bnrepro.experiments.ics_proxy import DRIVER

if __name__ == "__main__":
    DRIVER.main()
