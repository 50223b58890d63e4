"""The active loop: the state that crosses rounds (state), the round as a pipeline and the loop over
rounds (round), iNAS (inas), training (train, augment, permutations)."""
