"""The seeder: fetches a task's bytes from the origin once, builds its metainfo and seeds it.

`seeder.app.create_app(settings)` returns the HTTP API with everything behind
it; `seeder.service.SeederService` is that machinery alone, for a process that
serves the API from an app of its own (the single-machine mode).
"""
