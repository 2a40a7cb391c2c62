"""DSP graph and kernels; arrives with the DSP engine issue."""
