"""vaezoo's built-in variants, one file each. Installed as the package ``vaezoo_plugins`` and
registered through the ``vaezoo.models`` entry points in pyproject.toml, as any plugin is."""
