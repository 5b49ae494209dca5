"""`deqfl reproduce`: the evidence suite (E1-E4), its results store and its report."""
