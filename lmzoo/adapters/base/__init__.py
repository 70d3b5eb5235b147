"""What adapter families are built from: the Adapter base class and its registry (``registry``),
the bridges between torch modules and the merge maths (``modules``), the machinery of families whose
mergeable part is one chain of residual blocks (``chain``), and one traced forward (``tracing``)."""
