"""Dev mode: building from source, watching it, the Vite UI server, plugins run by hand
(``.devinfo``) and scaffolds. Uses the host through the plugin table, never the manager.
"""
