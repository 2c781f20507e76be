"""DecByzPG honest peer: the pure learning core (no networking) and, later, its daemon."""
