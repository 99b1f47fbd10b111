"""Secret stores. One module per store, all behind the small `Backend` protocol."""
