"""A module that fails while being imported: `run: raises_at_import:anything`."""

SETTINGS = {"retries": 3}
raise RuntimeError("corpus: this module refuses to be imported")
