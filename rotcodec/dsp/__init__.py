"""Signal processing shared by the codec, the losses and the metrics."""
