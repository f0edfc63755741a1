"""Thin views: parse the request, call a model method or a query, render a template."""
