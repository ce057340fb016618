"""The example app that ``edgeauth demo`` puts behind edgeauth."""
