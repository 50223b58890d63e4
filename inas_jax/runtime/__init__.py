"""What a run needs of the machine: the compilation cache (compilation), the allocator restart
(allocator), the environment record (environment) and memory bounds (resources)."""
