"""HTTP layer of the API: dependencies, response schemas, error handlers and the routers in ``routes/``."""
