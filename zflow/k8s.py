def export_command(args): return 0
