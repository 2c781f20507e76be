"""Byzantine behaviour: attacks that lie to honest peers, kept apart from the honest code."""
