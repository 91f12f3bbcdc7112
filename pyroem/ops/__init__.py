"""
Numerical kernels shared by the models and the inference engine (a layer below both):

- :mod:`~pyroem.ops.recursions`: forward-backward and Viterbi over a discrete chain (pure
  functions of log-potentials), with :mod:`~pyroem.ops.scaled` (one block, scaled
  probabilities) and :mod:`~pyroem.ops.blocked` (:math:`O(\\sqrt T)` Python steps);
- :mod:`~pyroem.ops.compiled`: the same recursion compiled, for chains with few states;
- :mod:`~pyroem.ops.denormals`: subnormal floats flushed while a recursion runs.

``pyroem.infer`` (the generic engine, for chains that users write) and ``pyroem.models``
(the built-in HMMs) both call these; neither imports the other for them.
"""
