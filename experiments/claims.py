"""`python experiments/claims.py run|draw`: see bnrepro.experiments.claims."""

from bnrepro.experiments.claims import DRIVER

if __name__ == "__main__":
    DRIVER.main()
