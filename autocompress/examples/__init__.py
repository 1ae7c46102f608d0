"""Small example environments (a user env given as 'package.module:ClassName')."""
