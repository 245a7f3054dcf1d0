"""Printing: the IPP codec and the hub's handling of relayed IPP requests."""
