"""One module per command (group); each function parses options, calls the library and prints."""
