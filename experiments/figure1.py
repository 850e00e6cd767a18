"""`python experiments/figure1.py run|collect|draw`: see bnrepro.experiments.figure1."""

from bnrepro.experiments.figure1 import DRIVER

if __name__ == "__main__":
    DRIVER.main()
