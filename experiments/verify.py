"""`python experiments/verify.py [--quick] [--only NAMES]`: see bnrepro.verify."""

from bnrepro.verify import main

if __name__ == "__main__":
    main()
