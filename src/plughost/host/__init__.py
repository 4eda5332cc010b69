"""The host: one slot per plugin (``slot``), the table of slots (``table``), crash and
hang handling (``restarter``), installing (``installer``) and the public facade
(``manager``). Only ``host.slot`` changes a plugin's phase.
"""
