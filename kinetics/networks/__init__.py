"""The networks and the transforms around them: ``architectures`` (the network classes and their
registry, ``@register("name")`` and ``build_model``) and ``transforms`` (Box-Cox on mass
fractions, log pressure, the output transforms, z-scoring)."""
