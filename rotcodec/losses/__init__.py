"""Training and evaluation losses: spectral, time-domain, adversarial."""
