"""`python experiments/sensitivity.py run|collect|draw`: see bnrepro.experiments.sensitivity."""

from bnrepro.experiments.sensitivity import DRIVER

if __name__ == "__main__":
    DRIVER.main()
