"""trioxy's built-in filters, one concern a module. Each module registers its
filters through the ``trioxy_filters`` hook (see :mod:`pipeline.hookspecs`)."""
