"""Raw data: the synthetic demo world and the checks (later: downloads) of the real screens."""
