"""edx-platform's courseware history models, as far as csmh-proxy's Django tests need them (see models.py)."""
