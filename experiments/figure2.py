"""`python experiments/figure2.py run|collect|draw`: see bnrepro.experiments.figure2."""

from bnrepro.experiments.figure2 import DRIVER

if __name__ == "__main__":
    DRIVER.main()
