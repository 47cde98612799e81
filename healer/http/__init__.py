"""The HTTP edge: where alerts and manual triggers enter, and where people read history."""
