"""Radios: the contract in base.py, one folder per radio, and the registry that maps a kind to its driver."""
