"""The example app's own tests: how a host app tests itself with the gate's pytest plugin."""
