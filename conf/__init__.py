"""The configs, packaged as mvqa._conf by the wheel: Hydra's pkg:// search path needs a package."""
