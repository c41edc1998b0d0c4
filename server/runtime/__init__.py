"""Running the server: wiring the application, the serve loop, signals and worker processes."""
