"""Provider fakes: real HTTP servers on loopback."""
