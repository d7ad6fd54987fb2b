"""A Sphinx extension of the course: each script tag once per page.

sphinx-thebe registers its configuration script twice under Jupyter Book 1.x, so every
page declared ``const THEBE_JS_URL`` twice and logged a console error. Identical script
entries are dropped from the page context before the page is written."""


def _unique_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        # the same script may come once with filename None and once with "" (body-only scripts)
        name = getattr(js, "filename", str(js)) or ""
        key = (name, tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept


def setup(app):
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
