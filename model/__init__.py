"""MAGREF on diffusers' Wan2.1 I2V. Importing the package registers its model roles."""

from model import roles as _roles  # noqa: F401
