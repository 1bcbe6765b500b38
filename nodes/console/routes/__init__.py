"""The console's pages, one router per page group, included by ``create_console``.

Why routers rather than closures in the factory: each page group reads alone,
declares what it needs (:mod:`nodes.console.deps`) and can be tested with
``app.dependency_overrides``.
"""
