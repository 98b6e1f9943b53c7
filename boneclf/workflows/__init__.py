"""Work that spans the layers: the offline demo and the HTML report."""
