"""RoPE variants: 3D positions, frequencies, axis maps and the reference rotation."""
