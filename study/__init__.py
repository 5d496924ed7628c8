"""Orchestration of a study: configs, Ray Data generation, the command line. Imports ``components``."""
