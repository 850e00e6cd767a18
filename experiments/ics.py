"""`python experiments/ics.py run|collect|draw`: see bnrepro.experiments.ics."""

from bnrepro.experiments.ics import DRIVER

if __name__ == "__main__":
    DRIVER.main()
